"""Raw market-data sources: Binance public dumps and tick captures turned into bars."""
