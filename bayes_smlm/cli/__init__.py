"""The ``bayes-smlm`` command line: :mod:`.main` (parser, simulate, crlb, posterior, tasks, study,
report), :mod:`.nets` (train-phi, localize, evaluate-phi, train-psi), :mod:`.arguments` (argument
types and the one-line error reporting)."""
