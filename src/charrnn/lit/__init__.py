"""Layer 2, Lightning: the DataModule, the LightningModule and checkpoint I/O, built on
:mod:`charrnn.core`."""
