"""The planners' kit: shared, pure planning code with public names.

Every remediation module builds its plans from these pieces; none imports
another remediation (an import-linter contract says so).

- :mod:`.options`: read a function's options (numbers, flags), refusing bad ones;
- :mod:`.nodes`: the node an alert or Splunk result names;
- :mod:`.gpu`: GPU capacity and placement (requests, free GPUs, first-fit);
- :mod:`.workload`: the workload a pod, a Deployment or an InferenceService label names;
- :mod:`.restart`: a rollout restart (or a pod delete) of that workload;
- :mod:`.drain`: which pods a drain evicts, and the cordon + drain plan itself;
- :mod:`.rollout`: whether a rollout is complete, as ``kubectl rollout status`` judges it;
- :mod:`.checks`: the verification checks a remediation declares for its actions.
"""
