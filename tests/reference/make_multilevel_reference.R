# Reference values for multilevel models (spatialmeta.meta_analysis.multilevel.pool_mv):
# metafor's rma.mv with nested random intercepts, inputs stored beside the outputs.
# Run from the repository root:  Rscript tests/reference/make_multilevel_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
case <- function(name, fit, outer, inner, mods = NULL) {
  list(name = name, yi = num(fit$yi), vi = num(fit$vi), outer = as.character(outer),
       inner = as.character(inner), mods = if (is.null(mods)) NULL else num(mods),
       method = fit$method, sigma2 = num(fit$sigma2), s_nlevels = num(fit$s.nlevels),
       beta = num(fit$beta), se = num(fit$se), zval = num(fit$zval), pval = num(fit$pval),
       ci_lb = num(fit$ci.lb), ci_ub = num(fit$ci.ub), QE = num(fit$QE), QEp = num(fit$QEp),
       logLik = num(logLik(fit)))
}
data(dat.konstantopoulos2011, package = "metadat")
k <- dat.konstantopoulos2011
data(dat.assink2016, package = "metadat")
a <- dat.assink2016
cases <- list(
  case("konstantopoulos2011_REML", rma.mv(yi, vi, random = ~ 1 | district/school, data = k),
       k$district, k$school),
  case("konstantopoulos2011_ML_year", rma.mv(yi, vi, mods = ~ year, method = "ML",
                                            random = ~ 1 | district/school, data = k),
       k$district, k$school, k$year),
  case("assink2016_REML", rma.mv(yi, vi, random = ~ 1 | study/esid, data = a), a$study, a$esid),
  case("assink2016_REML_year", rma.mv(yi, vi, mods = ~ year, random = ~ 1 | study/esid, data = a),
       a$study, a$esid, a$year)
)
writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")), cases = cases),
                  digits = NA, auto_unbox = TRUE, null = "null"),
           "tests/reference/multilevel_reference.json")
