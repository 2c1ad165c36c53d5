"""Adaptation of a trained run to unlabelled scenes from the deployment (self-training).

``edgeseg adapt RUN --images DIR --data DIR --out NEWRUN`` and :meth:`edgeseg.Run.adapt` drive
:func:`edgeseg.adaptation.adapt.adapt_run`; :mod:`edgeseg.adaptation.pseudo` chooses the
pseudo-labels, :mod:`edgeseg.adaptation.labelling` predicts them, and
:mod:`edgeseg.adaptation.mixing` mixes them with the labelled crops.
"""

from edgeseg.adaptation.adapt import AdaptOptions, AdaptResult, adapt_run

__all__ = ["AdaptOptions", "AdaptResult", "adapt_run"]
