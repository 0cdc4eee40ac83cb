"""What is learned from rows: clustering, satisfaction, similarity."""
