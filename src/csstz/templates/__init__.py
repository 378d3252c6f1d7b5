"""Template stage (torch-free): rest-frame bases seen through the CSST line-spread function,
chi2(z) curves on a ln(1+z) grid, and the template-fit redshift method.

Modules: :mod:`.basis` (kcorrect basis, LSF, resolution matrix), :mod:`.nnls` (exact
small non-negative least squares), :mod:`.fit` (:class:`~.fit.TemplateModel`,
:func:`~.fit.fit_templates`), :mod:`.locator` (the p(z) runs' non-negative locator on native pixels). Nothing is
imported here eagerly.
"""
