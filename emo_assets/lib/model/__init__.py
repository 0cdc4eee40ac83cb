"""emotion2vec+: settings, model directories (hub, test), the engine, masked forward, windows."""
