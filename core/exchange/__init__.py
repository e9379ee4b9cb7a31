"""Exchange adapters: the Broker implementations and Bybit access through pybit (the only pybit importers)."""
