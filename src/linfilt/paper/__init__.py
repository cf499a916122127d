"""The paper's reproduction, built on the core: data sets, the paper's models, training, batched
ensembles, populations, experiments, reports and model inversion, and the `demo`, `data`, `train`,
`reproduce` and `report` commands. The core never imports this package; it reaches it only
through the registrations of `linfilt.paper.plugin` (entry-point group `linfilt.plugins`)."""
