"""``azureml.train``: the estimators (``dnn``) and sweeps (``hyperdrive``)."""
