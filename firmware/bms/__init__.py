"""Pure BMS logic: no ``machine`` imports, time and buses are injected."""
