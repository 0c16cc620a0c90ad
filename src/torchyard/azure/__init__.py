"""Azure ML v1's SDK names, implemented over torchyard (L5, beside the SDK).

The implementations live here (``torchyard.azure.compute``, ``.workspace``, ``.environments``,
``.webservice``, ``.widgets``); :mod:`torchyard.azureml` mirrors the module tree of the
``azureml`` packages (``azureml.core.compute`` → ``torchyard.azureml.core.compute``, ...), so a
notebook migrates by changing its import lines only. See docs/guides/azure-migration.md.
"""
