"""The web console (Operation Center): server-rendered pages served by the api service at `/`."""
