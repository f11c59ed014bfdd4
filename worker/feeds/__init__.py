"""Feed watching: fetch (safely), parse (robustly), store each post exactly once."""
