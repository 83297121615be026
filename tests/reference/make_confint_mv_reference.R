# Reference values for the profile-likelihood intervals of every random-effects parameter of
# rma.mv fits (spatialmeta MultilevelResult.confint): the variances and correlations of
# `~ inner | outer` structures and the variance and range of spatial structures, metafor's
# confint(fit) (each parameter profiled with the others re-maximized; a bound where the
# drop is not reached). Inputs stored beside outputs.
# Run from the repository root:  Rscript tests/reference/make_confint_mv_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
r15 <- function(x) signif(x, 15)

# every "random" row of confint's list (tau/sigma, the square roots, dropped), with the
# signs metafor puts on a bound it did not pass ("<" / ">": the drop was not reached in its
# search interval, so the true bound lies beyond)
rows <- function(ci) {
  parts <- if (inherits(ci, "list.confint.rma")) ci[sapply(ci, is.list)] else list(ci)
  out <- do.call(rbind, lapply(parts, function(p) p$random))
  keep <- !grepl("^(tau|sigma)(\\.|$)", rownames(out))
  lb <- unlist(lapply(parts, function(p) rep(p$lb.sign, nrow(p$random))))[keep]
  ub <- unlist(lapply(parts, function(p) rep(p$ub.sign, nrow(p$random))))[keep]
  out <- out[keep, , drop = FALSE]
  list(names = rownames(out), estimate = num(out[, 1]), ci_lb = num(out[, 2]),
       ci_ub = num(out[, 3]), lb_sign = lb, ub_sign = ub)
}

data(dat.berkey1998, package = "metadat")
b <- dat.berkey1998
b$yi <- r15(b$yi); b$v1i <- r15(b$v1i); b$v2i <- r15(b$v2i)
Vb <- bldiag(lapply(split(b[, c("v1i", "v2i")], b$trial), as.matrix))
structured <- function(s) {
  fit <- rma.mv(yi, Vb, mods = ~ outcome - 1, random = ~ outcome | trial, struct = s, data = b)
  c(list(name = paste0("berkey1998_", s), kind = "structured", struct = s, yi = num(fit$yi),
         V = unname(as.matrix(Vb)), inner = as.character(b$outcome),
         outer = as.character(b$trial), logLik = num(logLik(fit))),
    rows(confint(fit)))
}
cases <- lapply(c("CS", "UN", "HCS"), structured)

# spatial: 50 points on a 10 x 10 square, exponential correlation with range 2, variance
# 0.1, and an independent part (nugget); SPEXP and SPGAU
set.seed(11)
n <- 50
sp <- data.frame(x = runif(n, 0, 10), y = runif(n, 0, 10), vi = runif(n, 0.005, 0.02))
D <- as.matrix(dist(sp[, c("x", "y")]))
sp$yi <- 0.3 + as.numeric(t(chol(0.1 * exp(-D / 2))) %*% rnorm(n)) + rnorm(n, 0, 0.1) +
  rnorm(n, 0, sqrt(sp$vi))
sp$yi <- r15(sp$yi); sp$vi <- r15(sp$vi); sp$x <- r15(sp$x); sp$y <- r15(sp$y)
sp$const <- 1
sp$id <- seq_len(n)
for (s in c("SPEXP", "SPGAU")) {
  fit <- rma.mv(yi, vi, random = list(~ x + y | const, ~ 1 | id), struct = s, data = sp)
  cases[[length(cases) + 1]] <- c(
    list(name = paste0("spatial_", s), kind = "spatial", struct = s, yi = num(sp$yi),
         vi = num(sp$vi), x = num(sp$x), y = num(sp$y), sigma2 = num(fit$sigma2),
         tau2 = num(fit$tau2), rho = num(fit$rho), logLik = num(logLik(fit))),
    rows(confint(fit)))
}
writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")), cases = cases),
                  digits = NA, auto_unbox = TRUE, null = "null"),
           "tests/reference/confint_mv_reference.json")
