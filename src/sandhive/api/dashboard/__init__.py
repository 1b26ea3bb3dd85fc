"""The web dashboard at `/dashboard` (docs/dashboard.md): server-rendered pages over the API's own services."""
