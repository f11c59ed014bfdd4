"""End-to-end tests: a real Chromium driving the product's real processes."""
