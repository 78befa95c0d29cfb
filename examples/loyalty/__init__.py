"""Adding a step with versioning: a fourth participant and place_order version 3.

- `service.py`: LoyaltyService (AwardPoints / RevokePoints), a participant that
  obeys the rules of docs/design.md §3, served by service_kit like the others.
- `__main__.py`: `python -m examples.loyalty` serves it (127.0.0.1:7005).
- `saga.py`: place_order version 3, version 2's steps and an award of points
  after shipping, loaded into the orchestrator with `--saga`.

docs/writing-a-saga.md walks through it; tests/orchestrator/test_adding_a_step.py
deploys it while version 1's sagas are in flight.
"""
