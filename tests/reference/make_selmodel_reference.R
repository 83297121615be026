# Reference values for step-function selection models (spatialmeta.meta_analysis.selection):
# metafor's selmodel(type = "stepfun") on rma.uni fits, with the inputs stored beside the
# outputs, and the log-likelihood of the fit evaluated by metafor's own function at its
# estimates. Run from the repository root:
#   Rscript tests/reference/make_selmodel_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
case <- function(name, fit, steps, alternative = "greater") {
  sel <- selmodel(fit, type = "stepfun", steps = steps, alternative = alternative)
  X <- model.matrix(fit)
  list(name = name, alternative = alternative, yi = num(fit$yi), vi = num(fit$vi),
       X = unname(lapply(seq_len(ncol(X)), function(j) num(X[, j]))),
       method = fit$method, steps = num(sel$steps), beta = num(sel$beta), se = num(sel$se),
       zval = num(sel$zval), pval = num(sel$pval), ci_lb = num(sel$ci.lb), ci_ub = num(sel$ci.ub),
       tau2 = num(sel$tau2), se_tau2 = num(sel$se.tau2), delta = num(sel$delta),
       se_delta = num(sel$se.delta), ll = num(sel$ll), LRT = num(sel$LRT), LRTp = num(sel$LRTp),
       LRTdf = num(sel$LRTdf), k_per_step = num(table(factor(sel$pgrp, levels = seq_along(sel$steps)))))
}
data(dat.hackshaw1998, package = "metadat")
data(dat.bcg, package = "metadat")
data(dat.bangertdrowns2004, package = "metadat")
h <- dat.hackshaw1998
b <- dat.bangertdrowns2004
b <- b[!is.na(b$yi), ]
cases <- list(
  case("hackshaw1998_3steps", rma(yi, vi, data = h, method = "ML"), c(0.025, 0.5, 1)),
  case("hackshaw1998_REML_2steps", rma(yi, vi, data = h), c(0.05, 1)),
  case("bangertdrowns2004_mods", rma(yi, vi, mods = ~ grade, data = b, method = "ML"), c(0.025, 1)),
  case("bcg_less", rma(yi, vi, data = escalc("RR", ai = tpos, bi = tneg, ci = cpos, di = cneg,
                                               data = dat.bcg), method = "ML"),
       c(0.025, 0.5, 1), alternative = "less")
)
writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")), cases = cases),
                  digits = NA, auto_unbox = TRUE),
           "tests/reference/selmodel_reference.json")
