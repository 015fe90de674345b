"""Scale-out: flashvl as a Ray Serve application (``flashvl serve --engine ray``, ``serve run
flashvl.deploy.ray:app``). Needs the ``ray`` extra.

- ``proxies``: stand-ins for stages that run in Ray Serve deployments, behind the same
  ``VisionStage`` / ``LanguageStage`` protocols, so the runtime guards them like local ones;
- ``server``: the stage deployment (one stage, built by ``StageBuilder``, in a replica);
- ``ray``: the application (ingress + one deployment per stage role) and its launcher;
- ``shared_state``: the settings that must point at shared stores with more than one ingress;
- ``tracing``: OpenTelemetry spans across processes;
- ``cluster``: a real local multi-node Ray cluster for tests and benchmarks.

Only ``ray`` imports Ray; the others take any object with Ray Serve's handle interface.
"""
