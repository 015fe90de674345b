"""Auth, client-address policy, rate/concurrency limits and the model gate (see SECURITY.md)."""
