"""End-to-end tests: a real headless Chromium against the real service on the local stack."""
