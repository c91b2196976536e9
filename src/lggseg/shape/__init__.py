"""Tumor shape features and their association with genomic subtypes (radiogenomics, issue 15).

* :mod:`lggseg.shape.features`: per-patient shape features from a ``(Z, H, W)`` bool mask.
* :mod:`lggseg.shape.stats`: Fisher / Freeman-Halton exact tests, Kruskal-Wallis, multiple-testing
  corrections, AUC, Spearman and Bland-Altman agreement.
* :mod:`lggseg.shape.sources`: where masks come from: ground truth, a mask folder, or a U-Net
  (the out-of-fold models of a cross-validation folder, or one weights file).
* :mod:`lggseg.shape.render`: atomic CSV/Markdown writes and the figures.
* :mod:`lggseg.shape.cohort`: the shipped cohort reference (``cohort_features.csv``, manual masks
  of the 100 patients) and one case's features and percentiles, for the web page's Shape panel.
* :mod:`lggseg.shape.report`: the cohort run that writes ``features.csv``, ``associations.csv``,
  box plots and ``report.md``.

Nothing heavy is imported here; import the submodules you need.
"""
