"""Layer 3, the applications: charrnn-train, -sample, -eval, -report and the run-directory code they share."""
