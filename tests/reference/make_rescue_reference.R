# Regenerate tests/reference/rescue_reference.json from rescue_inputs.json:
#
#   Rscript tests/reference/make_rescue_reference.R
#
# For every analysis of rescue_inputs.json (rows on which ML/REML/EB Fisher scoring
# does not converge with metafor's default control), two metafor fits:
#   default  rma(yi, vi, method) with the default control; it is expected to stop with
#            "Fisher scoring algorithm did not converge" (the error is stored)
#   damped   rma(yi, vi, method, control = list(stepadj = 0.5, maxiter = 10000,
#            threshold = 1e-12)): half steps, which converge; tau2, se.tau2, b, se
# spatialmeta's rescue (a bracketed solve of the same likelihood equation) is checked
# against the damped fits. For the `nonconverge` set, where metafor's own trimfill,
# baujat and leave1out stop, the same analyses of the damped REML fit (baujat and
# leave1out refit with its control; trimfill is given it): the fit with test z and knha (predict() for the prediction interval),
# trimfill (L0, R0; side automatic, left, right), baujat (z, knha) and leave1out with an
# eighth study (0.3, 0.05) whose removal leaves the set; confint (levels 95, 90), radial
# and regtest(predictor = "vi") of the damped fit; and trimfill(REML, L0) of the rows of
# bias_reference.json's random sample where metafor's default stops. 17 significant digits.
suppressMessages(library(metafor))
library(jsonlite)
here <- "tests/reference"
inp <- fromJSON(file.path(here, "rescue_inputs.json"), simplifyVector = FALSE)
out <- list()
for (s in inp$sets) {
  yi <- unlist(s$yi); vi <- unlist(s$vi)
  err <- tryCatch({ rma(yi, vi, method = s$method); NA_character_ },
                  error = function(e) conditionMessage(e))
  f <- rma(yi, vi, method = s$method,
           control = list(stepadj = 0.5, maxiter = 10000, threshold = 1e-12))
  out[[length(out) + 1]] <- list(
    name = s$name, method = s$method, yi = yi, vi = vi,
    default_error = err,
    tau2 = f$tau2, se_tau2 = f$se.tau2, estimate = as.numeric(f$b), se = f$se,
    iterations = f$iter
  )
}
damp <- list(stepadj = 0.5, maxiter = 10000, threshold = 1e-12)
nc <- Filter(function(s) s$name == "nonconverge", inp$sets)[[1]]
yi <- unlist(nc$yi); vi <- unlist(nc$vi)
full <- list()
for (test in c("z", "knha")) {
  f <- rma(yi, vi, method = "REML", test = test, control = damp)
  p <- predict(f)
  full[[test]] <- list(estimate = as.numeric(f$b), se = f$se, zval = f$zval, pval = f$pval,
                       ci_lb = f$ci.lb, ci_ub = f$ci.ub, tau2 = f$tau2, se_tau2 = f$se.tau2,
                       I2 = f$I2, H2 = f$H2, QE = f$QE, QEp = f$QEp, pi_lb = p$pi.lb,
                       pi_ub = p$pi.ub)
}
f <- rma(yi, vi, method = "REML", control = damp)
tfs <- list()
for (estimator in c("L0", "R0")) for (side in c("auto", "left", "right")) {
  tf <- if (side == "auto") trimfill(f, estimator = estimator, control = damp) else
    trimfill(f, estimator = estimator, side = side, control = damp)
  tfs[[length(tfs) + 1]] <- list(estimator = estimator, side_arg = side, side = tf$side,
                                 k0 = tf$k0, estimate = as.numeric(tf$b), se = tf$se,
                                 tau2 = tf$tau2)
}
bjs <- list()
for (test in c("z", "knha")) {
  b <- baujat(rma(yi, vi, method = "REML", test = test, control = damp))
  bjs[[test]] <- list(x = b$x, y = b$y)
  dev.off()
}
l1 <- leave1out(rma(c(yi, 0.3), c(vi, 0.05), method = "REML", control = damp))
ci <- list()
for (level in c(95, 90)) {
  cf <- confint(rma(yi, vi, method = "REML", level = level, control = damp))
  g <- cf$random
  ci[[as.character(level)]] <- list(tau2 = g["tau^2", ], tau = g["tau", ], I2 = g["I^2(%)", ],
                                    H2 = g["H^2", ], lb_sign = cf$lb.sign,
                                    ub_sign = cf$ub.sign, ci_null = cf$ci.null)
}
rd <- radial(f); invisible(dev.off())
eg <- list()
for (test in c("z", "knha")) {
  r <- regtest(rma(yi, vi, method = "REML", test = test, control = damp), predictor = "vi")
  eg[[test]] <- list(zval = r$zval, pval = r$pval, dfs = r$dfs, est = as.numeric(r$est),
                     ci_lb = r$ci.lb, ci_ub = r$ci.ub, est_pval = r$fit$pval[1])
}
nonconverge <- list(yi = yi, vi = vi, fit = full, trimfill = tfs, baujat = bjs,
                    leave1out = list(estimate = l1$estimate, tau2 = l1$tau2, se = l1$se),
                    confint = ci, radial = list(x = rd$x, y = rd$y), regtest_vi = eg)
# the simulated rows of bias_reference.json's `random` set whose default trimfill(REML,
# L0) stops, with the damped control instead
rnd <- fromJSON(file.path(here, "bias_reference.json"), simplifyVector = FALSE)$random
random_tf <- list()
for (i in seq_along(rnd)) {
  ryi <- unlist(rnd[[i]]$yi); rvi <- unlist(rnd[[i]]$vi)
  if (is.null(rnd[[i]]$REML_L0$error)) next
  tf <- trimfill(rma(ryi, rvi, method = "REML", control = damp), estimator = "L0",
                 control = damp)
  random_tf[[length(random_tf) + 1]] <- list(row = i - 1, k0 = tf$k0, side = tf$side,
                                             estimate = as.numeric(tf$b), se = tf$se,
                                             tau2 = tf$tau2)
}
res <- list(generated_by = "tests/reference/make_rescue_reference.R",
            metafor_version = as.character(packageVersion("metafor")),
            R_version = R.version.string, fits = out, nonconverge = nonconverge,
            random_trimfill = random_tf)
writeLines(toJSON(res, auto_unbox = TRUE, digits = I(17), na = "null"),
           file.path(here, "rescue_reference.json"))
cat(length(out), "fits\n")
