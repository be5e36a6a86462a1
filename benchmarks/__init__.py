"""One module per reproduced figure or table, each a short composition of the losstopo library."""
