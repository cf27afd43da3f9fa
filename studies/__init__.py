"""Study scripts; each writes ``reports/<study>/``. Importable as ``bayes_smlm.studies``."""
