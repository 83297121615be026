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
# spatial structures on a simulated field (80 points on a 10 x 10 square, exponential
# correlation with range 2, variance 0.1), the data stored with the results
set.seed(3)
n <- 80
sp <- data.frame(x = runif(n, 0, 10), y = runif(n, 0, 10), vi = runif(n, 0.005, 0.02))
D <- as.matrix(dist(sp[, c("x", "y")]))
sp$yi <- 0.3 + as.numeric(t(chol(0.1 * exp(-D / 2))) %*% rnorm(n)) + rnorm(n, 0, sqrt(sp$vi))
sp$const <- 1
sp$id <- seq_len(n)
spatial <- function(name, fit) {
  list(name = name, yi = num(fit$yi), vi = num(fit$vi), x = num(sp$x), y = num(sp$y),
       struct = fit$struct[1], nugget = fit$withS, sigma2 = if (fit$withS) num(fit$sigma2) else NULL,
       tau2 = num(fit$tau2), rho = num(fit$rho), beta = num(fit$beta), se = num(fit$se),
       zval = num(fit$zval), ci_lb = num(fit$ci.lb), ci_ub = num(fit$ci.ub), QE = num(fit$QE),
       logLik = num(logLik(fit)), method = fit$method)
}
spatial_cases <- list(
  spatial("SPEXP", rma.mv(yi, vi, random = ~ x + y | const, struct = "SPEXP", data = sp)),
  spatial("SPGAU", rma.mv(yi, vi, random = ~ x + y | const, struct = "SPGAU", data = sp)),
  spatial("SPRAT", rma.mv(yi, vi, random = ~ x + y | const, struct = "SPRAT", data = sp)),
  spatial("SPEXP_nugget", rma.mv(yi, vi, random = list(~ x + y | const, ~ 1 | id),
                                 struct = "SPEXP", data = sp))
)
# great-circle distances (dist = "gcd": sp::spDists(longlat = TRUE), the WGS84 ellipsoid)
# on a simulated field over 60 points of North America (exponential, range 800 km, with a
# nugget); the distance matrix is stored too
set.seed(4)
g <- data.frame(lon = runif(60, -125, -65), lat = runif(60, 25, 50), vi = runif(60, 0.01, 0.04))
Dg <- sp::spDists(as.matrix(g[, c("lon", "lat")]), longlat = TRUE)
g$yi <- 0.3 + as.numeric(t(chol(0.1 * exp(-Dg / 800) + diag(1e-10, 60))) %*% rnorm(60)) +
  rnorm(60, 0, sqrt(g$vi))
g$const <- 1
g$id <- seq_len(60)
fg <- rma.mv(yi, vi, random = list(~ lon + lat | const, ~ 1 | id), struct = "SPEXP",
             dist = "gcd", data = g)
gcd_case <- list(name = "SPEXP_gcd_nugget", yi = num(fg$yi), vi = num(fg$vi), lon = num(g$lon),
                 lat = num(g$lat), D = unname(Dg), sigma2 = num(fg$sigma2), tau2 = num(fg$tau2),
                 rho = num(fg$rho), beta = num(fg$beta), se = num(fg$se), zval = num(fg$zval),
                 ci_lb = num(fg$ci.lb), ci_ub = num(fg$ci.ub), QE = num(fg$QE),
                 logLik = num(logLik(fg)))
writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")), cases = cases,
                       spatial = spatial_cases, gcd = gcd_case),
                  digits = NA, auto_unbox = TRUE, null = "null"),
           "tests/reference/multilevel_reference.json")
