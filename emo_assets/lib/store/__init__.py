"""Where rows live: the Parquet lake, the DuckDB warehouse, day locks, accounting, SQL models."""
