"""Knowledge distillation: the objective and its losses (:mod:`.kd`), the teacher-logit cache
(:mod:`.cache`) and the teachers of a run (:mod:`.teachers`)."""
