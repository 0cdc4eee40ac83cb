"""emotion2vec+: settings (ModelSettings), model directories (hub, test), loading, the scorer protocol
and its results (scorer), the engine (EmotionModel), masked forward, windows, and a day's scoring."""
