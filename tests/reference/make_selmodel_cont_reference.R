# Reference values for the continuous weight functions of the selection models
# (spatialmeta.meta_analysis.selection): metafor's selmodel(type = "beta") (Citkowicz & Vevea
# 2017) and selmodel(type = "halfnorm") (Preston et al. 2004) on rma.uni fits, with the
# inputs (rounded to 15 significant digits before fitting, so R and Python fit the same
# doubles) stored beside the outputs. Each case holds two metafor fits:
#   default:  selmodel() with metafor's defaults (optim's BFGS, reltol 1e-8; each study's
#             integral by integrate() over the real line with rel.tol = .Machine$double.eps^0.25)
#   accurate: the same with control = list(optimizer = "Nelder-Mead", reltol = 1e-14,
#             maxit = 20000, intCtrl = list(rel.tol = 1e-12, subdivisions = 1000)); BFGS
#             cannot be used there: with the tighter integrals it stops with an error on the
#             beta model
# and, for each, `ll_exact`: metafor's log-likelihood at that fit's estimates, from
# metafor's own integrand (.selmodel.int) and weight function (wi.fun) but with each
# study's integral split at the p-value truncation points (where the beta weight has
# kinks) and computed to rel.tol 1e-13.
# Run from the repository root:
#   Rscript tests/reference/make_selmodel_cont_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
ll_exact <- function(sel) {
  yi <- c(sel$yi)
  vi <- sel$vi
  yhat <- c(model.matrix(sel) %*% sel$beta)
  pmin <- sel$pval.min
  cut <- if (pmin > 0) qnorm(pmin, lower.tail = FALSE) else 0
  Ai <- sapply(seq_along(yi), function(i) {
    br <- c(-Inf, unique(c(-cut, cut)) * sqrt(vi[i]), Inf)
    sum(sapply(seq_len(length(br) - 1), function(j)
      integrate(metafor:::.selmodel.int, br[j], br[j + 1], yi = yi[i], vi = vi[i], preci = 1,
                yhat = yhat[i], wi.fun = sel$wi.fun, delta = sel$delta, tau2 = sel$tau2,
                alternative = sel$alternative, pval.min = pmin, steps = sel$steps,
                rel.tol = 1e-13, subdivisions = 1000L)$value))
  })
  sum(log(sel$wi.fun(sel$pvals, sel$delta, yi, vi, 1, sel$alternative, sel$steps)) +
        dnorm(yi, yhat, sqrt(vi + sel$tau2), log = TRUE) - log(Ai))
}
out <- function(sel, warn) {
  list(beta = num(sel$beta), se = num(sel$se), zval = num(sel$zval), pval = num(sel$pval),
       ci_lb = num(sel$ci.lb), ci_ub = num(sel$ci.ub), tau2 = num(sel$tau2),
       se_tau2 = num(sel$se.tau2), delta = num(sel$delta), se_delta = num(sel$se.delta),
       ll = num(sel$ll), ll_exact = ll_exact(sel), ll0 = num(sel$ll0), LRT = num(sel$LRT),
       LRTdf = num(sel$LRTdf), LRTp = num(sel$LRTp), warnings = warn)
}
fit_sel <- function(fit, type, alternative, control) {
  warn <- character(0)
  sel <- withCallingHandlers(selmodel(fit, type = type, alternative = alternative,
                                      control = control),
                             warning = function(w) {
                               warn <<- c(warn, conditionMessage(w))
                               invokeRestart("muffleWarning")
                             })
  out(sel, warn)
}
accurate <- list(optimizer = "Nelder-Mead", reltol = 1e-14, maxit = 20000,
                 intCtrl = list(rel.tol = 1e-12, subdivisions = 1000L))
case <- function(name, yi, vi, mods, method, type, alternative = "greater") {
  yi <- signif(yi, 15)
  vi <- signif(vi, 15)
  fit <- if (is.null(mods)) rma(yi, vi, method = method) else
    rma(yi, vi, mods = ~ mods, method = method)
  X <- model.matrix(fit)
  cat(name, "\n")
  list(name = name, type = type, alternative = alternative, yi = num(yi), vi = num(vi),
       X = unname(lapply(seq_len(ncol(X)), function(j) num(X[, j]))), method = method,
       pval_min = if (type == "beta") 1e-5 else 0,
       default = fit_sel(fit, type, alternative, list()),
       accurate = fit_sel(fit, type, alternative, accurate))
}
h <- dat.hackshaw1998
b <- dat.bangertdrowns2004
b <- b[!is.na(b$yi), ]
bcg <- escalc("RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
cases <- list(
  case("hackshaw1998_beta", h$yi, h$vi, NULL, "ML", "beta"),
  case("hackshaw1998_halfnorm", h$yi, h$vi, NULL, "ML", "halfnorm"),
  case("hackshaw1998_REML_beta", h$yi, h$vi, NULL, "REML", "beta"),
  case("hackshaw1998_FE_halfnorm", h$yi, h$vi, NULL, "FE", "halfnorm"),
  case("bangertdrowns2004_mods_halfnorm", b$yi, b$vi, b$grade, "ML", "halfnorm"),
  case("bangertdrowns2004_mods_beta", b$yi, b$vi, b$grade, "ML", "beta"),
  case("bcg_less_beta", bcg$yi, bcg$vi, NULL, "ML", "beta", alternative = "less"),
  case("bcg_less_halfnorm", bcg$yi, bcg$vi, NULL, "ML", "halfnorm", alternative = "less")
)
writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")),
                       R = R.version.string, cases = cases),
                  digits = NA, auto_unbox = TRUE),
           "tests/reference/selmodel_cont_reference.json")
