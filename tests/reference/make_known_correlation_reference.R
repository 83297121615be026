# Reference values for a random effect with a known correlation between regions from a
# region graph (spatialmeta RegionGraph.correlation + KnownCorrelation in pool_mv): a 6 x 6
# lattice of regions with rook adjacency, the proper CAR correlation (D - rho W)^-1 scaled
# to unit diagonal (rho = 0.9) computed here, a simulated field with that correlation, and
# metafor's rma.mv(random = list(~ 1 | region, ~ 1 | id), R = list(region = Rcar)).
# Run from the repository root:  Rscript tests/reference/make_known_correlation_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
n <- 6
cells <- expand.grid(col = 1:n, row = 1:n)
ids <- sprintf("r%02d", seq_len(n * n))
W <- matrix(0, n * n, n * n)
for (i in seq_len(n * n)) for (j in seq_len(n * n)) {
  W[i, j] <- as.numeric(abs(cells$col[i] - cells$col[j]) + abs(cells$row[i] - cells$row[j]) == 1)
}
edges <- which(W > 0, arr.ind = TRUE) - 1  # 0-based (source, target), both directions
cov <- solve(diag(rowSums(W)) - 0.9 * W)
Rcar <- cov2cor(cov)
dimnames(Rcar) <- list(ids, ids)
set.seed(21)
vi <- runif(n * n, 0.01, 0.05)
yi <- 0.2 + as.numeric(t(chol(0.08 * Rcar)) %*% rnorm(n * n)) + rnorm(n * n, 0, sqrt(vi))
d <- data.frame(yi = signif(yi, 15), vi = signif(vi, 15), region = ids, id = seq_len(n * n))
fit <- rma.mv(yi, vi, random = list(~ 1 | region, ~ 1 | id), R = list(region = Rcar), data = d)
indep <- rma.mv(yi, vi, random = list(~ 1 | region, ~ 1 | id), data = d)
writeLines(toJSON(list(
  metafor = as.character(packageVersion("metafor")), ids = ids, edges = unname(edges),
  rho = 0.9, R = unname(Rcar), yi = num(d$yi), vi = num(d$vi), sigma2 = num(fit$sigma2),
  beta = num(fit$beta), se = num(fit$se), zval = num(fit$zval), ci_lb = num(fit$ci.lb),
  ci_ub = num(fit$ci.ub), QE = num(fit$QE), logLik = num(logLik(fit)),
  logLik_independent = num(logLik(indep)), se_independent = num(indep$se)),
  digits = NA, auto_unbox = TRUE), "tests/reference/known_correlation_reference.json")
