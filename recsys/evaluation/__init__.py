"""Offline evaluation: ranking metrics (``ranking``), off-policy estimators (``estimators``),
arm-level evaluation from candidate logs (``arms``), the Open Bandit Dataset experiment
(``obd``), the demo-world A/B simulation (``simulate``), HTML reports (``report``), the
recommender protocols (``protocols``) and the recommender figures over a database
(``recommenders``). Import submodules directly; nothing heavy is imported here."""
