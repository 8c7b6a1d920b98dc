"""The SDK's semantics as a user sees them: results, ids, replay, retries, timeouts,
cancellation, typed payloads, recorded errors, external promises, timers and the promise API.

Restarts are simulated by closing an app and opening a new ``Resonate`` on the same SQLite
file. Durations run on a ``FakeClock`` wherever a test waits for one.
"""
