"""One module per resource: each handler parses its request, calls the store or the runtime, and renders a reply."""
