"""Stage 2: the market: features, windows, the market's arrays (cached), the planted edge and
the execution rules (env). A decision at bar t sees bars <= t only."""
