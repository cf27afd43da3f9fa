"""The studies: one file per study, each writing ``reports/<study>/``.

``bayes-smlm study NAME`` runs the file ``studies/NAME.py`` (dashes as underscores), imported as
``bayes_smlm.studies.NAME`` — ``pyproject.toml`` maps the package ``bayes_smlm.studies`` to this
top-level folder. :mod:`.registry` lists the names and holds what every study shares.
"""
