"""Offline evaluation: ranking metrics (``ranking``), off-policy estimators (``estimators``),
arm-level evaluation from candidate logs (``arms``), the Open Bandit Dataset experiment
(``obd``), the demo-world A/B simulation (``simulate``) and HTML reports (``report``).
Import submodules directly; nothing heavy is imported here."""
