"""One declarative experiment per paper table or figure; each runs the flow and caches its results."""
