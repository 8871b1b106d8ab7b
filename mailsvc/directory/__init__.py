"""The directory flow: roster → plan → directory, and mandates over the term of office."""
