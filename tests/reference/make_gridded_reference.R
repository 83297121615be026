# Step 2 of regenerating tests/reference/gridded_reference.json (step 1:
# make_gridded_reference.py, which stores the TREFHT series of a few cells).
#
#   Rscript tests/reference/make_gridded_reference.R [file.json]
#
# For every cell and member: the OLS trend (per decade) and its Newey-West variance
# (sandwich::NeweyWest, Bartlett kernel, the stored lag, no prewhitening, no small-sample
# adjustment); then, per cell, metafor::rma.uni over the members' trends for REML and DL
# with both tests. Trends and variances are rounded to 15 significant digits before
# pooling, and stored, so that the Python test pools exactly the same doubles.

suppressPackageStartupMessages({
  library(metafor)
  library(sandwich)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
path <- if (length(args) >= 1) args[1] else "tests/reference/gridded_reference.json"
ref <- fromJSON(path, simplifyVector = TRUE, simplifyMatrix = FALSE)
r15 <- function(x) as.numeric(sprintf("%.15g", x))
t <- ref$t_decades
lag <- ref$lags

cells <- ref$cells
results <- list()
for (c in seq_len(nrow(cells))) {
  series <- cells$series[[c]]
  yi <- numeric(length(series)); vi <- numeric(length(series))
  for (m in seq_along(series)) {
    y <- as.numeric(series[[m]])
    fit <- lm(y ~ t)
    yi[m] <- coef(fit)[["t"]]
    vi[m] <- NeweyWest(fit, lag = lag, prewhite = FALSE, adjust = FALSE)[2, 2]
  }
  yi <- r15(yi); vi <- r15(vi)
  fits <- list()
  for (method in c("REML", "DL")) {
    for (test in c("z", "knha")) {
      f <- rma.uni(yi, vi, method = method, test = test)
      p <- predict(f)
      fits[[paste(method, test, sep = "_")]] <- list(
        estimate = f$b[[1]], se = f$se, zval = f$zval, pval = f$pval,
        ci_lb = f$ci.lb, ci_ub = f$ci.ub, tau2 = f$tau2, se_tau2 = f$se.tau2,
        I2 = f$I2, H2 = f$H2, QE = f$QE, QEp = f$QEp, pi_lb = p$pi.lb, pi_ub = p$pi.ub
      )
    }
  }
  results[[c]] <- list(yi = yi, vi = vi, fits = fits)
}
ref$results <- results
ref$generated_with <- list(
  R = R.version.string, metafor = as.character(packageVersion("metafor")),
  sandwich = as.character(packageVersion("sandwich"))
)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = TRUE), path)
