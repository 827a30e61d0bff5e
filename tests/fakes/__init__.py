"""In-process fakes of the providers the gateway talks to."""
