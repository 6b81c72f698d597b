"""Reading a results store and drawing the paper's figures and tables (pandas + matplotlib; no torch, no ray)."""
