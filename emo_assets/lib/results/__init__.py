"""What people take away: emo analyze outputs, reports, exports, charts."""
