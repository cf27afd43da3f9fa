"""Files: atomic writes (:mod:`.atomic`), posteriors as ArviZ DataTrees (:mod:`.posteriors`) and
what every study saves besides its report (:mod:`.study_files`)."""
