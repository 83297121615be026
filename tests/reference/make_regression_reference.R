# Regenerate tests/reference/regression_reference.json:
#
#   Rscript tests/reference/make_regression_reference.R [out.json]
#
# Reference values from metafor for
#   * meta-regression, rma.uni(yi, vi, mods = X): dat.bcg (ablat; ablat + year;
#     ablat without intercept; ablat with user weights), dat.molloy2014
#     (meanage + design, a categorical moderator), dat.raudenbush1985
#     (tester + weeks), every tau^2 estimator (EE, DL, HE, HS, SJ, ML, REML,
#     EB, PM) x test (z, knha): coefficients, vb, tau^2 and its SE, I^2, H^2,
#     R^2, QE, QM, weights, predict() at new moderator values and, for
#     random-effects fits, confint() (Q-profile) of tau^2, tau, I^2, H^2;
#   * confint() (Q-profile) for the intercept-only models of every dataset in
#     tests/reference/metafor_reference.json (read from that file, so the
#     inputs are identical), for every random-effects estimator, plus REML at
#     level 90, and for a synthetic set ("wide") whose upper bound exceeds the
#     search interval;
#   * regtest() (Egger's test) with model = "rma" (REML z, REML knha, DL z, EE
#     z) and model = "lm", for predictor = "sei" and "vi", on the same datasets,
#     with the p-value of the intercept (needed by PET-PEESE).
# Where metafor stops with an error, the message is stored instead of values.
#
# Inputs are rounded to 15 significant digits before fitting, so R fits
# exactly the doubles that the JSON (and therefore Python) sees. The Python
# tests read only the JSON and do not need R. The header of the JSON records
# the R, metafor and metadat versions.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/reference/regression_reference.json"
base <- fromJSON("tests/reference/metafor_reference.json", simplifyVector = TRUE)

r15 <- function(x) as.numeric(sprintf("%.15g", x))

num <- function(x) {
  if (is.null(x) || length(x) == 0 || is.na(x[1])) return(NA_real_)
  if (is.infinite(x[1])) return(if (x[1] > 0) "Inf" else "-Inf")
  as.numeric(x[1])
}
vec <- function(x) {
  x <- as.numeric(x)
  I(ifelse(is.na(x), NA_real_, x))
}

quietly <- function(expr_fun) {
  warns <- character(0)
  res <- tryCatch(
    withCallingHandlers(expr_fun(), warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }),
    error = function(e) e
  )
  list(res = res, warnings = as.list(warns))
}

random_part <- function(ci) {
  r <- ci$random
  list(
    tau2 = vec(r["tau^2", ]), tau = vec(r["tau", ]),
    I2 = vec(r["I^2(%)", ]), H2 = vec(r["H^2", ]),
    lb_sign = ci$lb.sign, ub_sign = ci$ub.sign, ci_null = ci$ci.null
  )
}

# ---------------------------------------------------------------- models ----
bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
molloy <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
raud <- dat.raudenbush1985

mdata <- list()
mdata$bcg <- list(
  yi = r15(bcg$yi), vi = r15(bcg$vi),
  columns = list(ablat = as.numeric(bcg$ablat), year = as.numeric(bcg$year))
)
mdata$molloy2014 <- list(
  yi = r15(molloy$yi), vi = r15(molloy$vi),
  columns = list(meanage = r15(molloy$meanage), design = as.character(molloy$design))
)
mdata$raudenbush1985 <- list(
  yi = r15(raud$yi), vi = r15(raud$vi),
  columns = list(tester = as.character(raud$tester), weeks = as.numeric(raud$weeks))
)
bcg_w <- r15(1 / sqrt(mdata$bcg$vi))

# Each model: dataset, formula over `columns`, intercept, weights, new moderator rows.
models <- list(
  list(name = "bcg_ablat", dataset = "bcg", formula = ~ ablat, intercept = TRUE,
       newmods = matrix(c(10, 30, 50), ncol = 1)),
  list(name = "bcg_ablat_year", dataset = "bcg", formula = ~ ablat + year, intercept = TRUE,
       newmods = rbind(c(10, 1950), c(40, 1970))),
  list(name = "bcg_ablat_noint", dataset = "bcg", formula = ~ ablat - 1, intercept = FALSE,
       newmods = matrix(c(10, 30), ncol = 1)),
  list(name = "bcg_ablat_weights", dataset = "bcg", formula = ~ ablat, intercept = TRUE,
       weights = bcg_w, newmods = matrix(c(10, 30, 50), ncol = 1)),
  list(name = "molloy2014_meanage_design", dataset = "molloy2014",
       formula = ~ meanage + design, intercept = TRUE, newmods = rbind(c(40, 0), c(60, 1))),
  list(name = "raudenbush1985_tester_weeks", dataset = "raudenbush1985",
       formula = ~ tester + weeks, intercept = TRUE, newmods = rbind(c(0, 2), c(1, 10)))
)

fit_mods <- function(model, method, test, level = 95) {
  d <- mdata[[model$dataset]]
  frame <- as.data.frame(d$columns, stringsAsFactors = FALSE)
  X <- model.matrix(model$formula, data = frame)
  X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
  w <- model$weights
  r <- quietly(function() {
    if (is.null(w)) {
      rma(yi = d$yi, vi = d$vi, mods = X, intercept = model$intercept,
          method = method, test = test, level = level)
    } else {
      rma(yi = d$yi, vi = d$vi, mods = X, intercept = model$intercept, weights = w,
          method = method, test = test, level = level)
    }
  })
  row <- list(model = model$name, method = method, test = test, level = level,
              warnings = r$warnings)
  res <- r$res
  if (inherits(res, "error")) {
    row$error <- conditionMessage(res)
    return(row)
  }
  pr <- predict(res, newmods = model$newmods)
  row <- c(row, list(
    k = res$k, p = res$p, coef_names = I(rownames(res$beta)),
    beta = vec(res$beta), se = vec(res$se), zval = vec(res$zval), pval = vec(res$pval),
    ci_lb = vec(res$ci.lb), ci_ub = vec(res$ci.ub), vb = unname(res$vb),
    tau2 = num(res$tau2), se_tau2 = num(res$se.tau2), I2 = num(res$I2), H2 = num(res$H2),
    R2 = num(res$R2), vt = num(res$vt), QE = num(res$QE), QEp = num(res$QEp),
    QM = num(res$QM), QMp = num(res$QMp), QMdf = vec(res$QMdf),
    weights_pct = vec(weights(res)),
    predict = list(newmods = unname(model$newmods), pred = vec(pr$pred), se = vec(pr$se),
                   ci_lb = vec(pr$ci.lb), ci_ub = vec(pr$ci.ub),
                   pi_lb = vec(pr$pi.lb), pi_ub = vec(pr$pi.ub))
  ))
  if (!is.element(method, c("EE", "FE", "CE"))) {
    ci <- quietly(function() confint(res))
    row$confint <- if (inherits(ci$res, "error")) list(error = conditionMessage(ci$res)) else
      random_part(ci$res)
  }
  row
}

methods <- c("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
random_methods <- methods[-1]
tests <- c("z", "knha")
fits <- list()
for (model in models) {
  for (method in methods) {
    for (test in tests) {
      fits[[length(fits) + 1]] <- fit_mods(model, method, test)
    }
  }
}
fits[[length(fits) + 1]] <- fit_mods(models[[2]], "REML", "z", level = 90)
fits[[length(fits) + 1]] <- fit_mods(models[[2]], "DL", "knha", level = 80)

# ------------------------------------------------------- confint (no mods) ----
# "wide": a synthetic set with very large heterogeneity, where the ML estimate is
# small enough that Q at tau2.max = 10 tau2 stays above the critical value, so
# the upper bound is reported as "> tau2.max".
extra <- list(wide = list(yi = c(-40, -10, 0, 15, 45), vi = c(1, 2, 1, 3, 1)))
cdata <- c(base$datasets, extra)
confints <- list()
for (name in names(cdata)) {
  d <- cdata[[name]]
  grid <- c(lapply(random_methods, function(m) list(method = m, level = 95)),
            list(list(method = "REML", level = 90)))
  for (g in grid) {
    r <- quietly(function() rma(yi = d$yi, vi = d$vi, method = g$method, level = g$level))
    row <- list(dataset = name, method = g$method, level = g$level)
    if (inherits(r$res, "error")) {
      row$error <- conditionMessage(r$res)
    } else {
      ci <- quietly(function() confint(r$res))
      if (inherits(ci$res, "error")) {
        row$error <- conditionMessage(ci$res)
      } else {
        row <- c(row, random_part(ci$res), list(warnings = ci$warnings))
      }
    }
    confints[[length(confints) + 1]] <- row
  }
}

# ---------------------------------------------------------------- regtest ----
regtests <- list()
settings <- list(
  list(model = "rma", method = "REML", test = "z"),
  list(model = "rma", method = "REML", test = "knha"),
  list(model = "rma", method = "DL", test = "z"),
  list(model = "rma", method = "EE", test = "z"),
  list(model = "lm", method = NA, test = NA)
)
for (name in names(base$datasets)) {
  if (name == "identical") next  # a perfect fit: lm's t statistics are undefined
  d <- base$datasets[[name]]
  for (s in settings) {
    for (predictor in c("sei", "vi")) {
      r <- quietly(function() {
        if (s$model == "lm") {
          regtest(d$yi, d$vi, model = "lm", predictor = predictor)
        } else {
          regtest(d$yi, d$vi, model = "rma", predictor = predictor, method = s$method,
                  test = s$test)
        }
      })
      row <- list(dataset = name, model = s$model, method = s$method, test = s$test,
                  predictor = predictor, warnings = r$warnings)
      if (inherits(r$res, "error")) {
        row$error <- conditionMessage(r$res)
      } else {
        x <- r$res
        est_pval <- if (s$model == "lm") coef(summary(x$fit))[1, 4] else x$fit$pval[1]
        row <- c(row, list(zval = num(x$zval), pval = num(x$pval), dfs = num(x$dfs),
                           est = num(x$est), ci_lb = num(x$ci.lb), ci_ub = num(x$ci.ub),
                           est_pval = num(est_pval)))
      }
      regtests[[length(regtests) + 1]] <- row
    }
  }
}

doc <- list(
  generated_by = "tests/reference/make_regression_reference.R",
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  mods_datasets = mdata,
  confint_extra_datasets = extra,
  mods_fits = fits,
  confint = confints,
  regtest = regtests
)
writeLines(toJSON(doc, digits = NA, auto_unbox = TRUE, na = "null", null = "null",
                  pretty = TRUE, matrix = "rowmajor"), out)
cat("wrote", length(fits), "meta-regression fits,", length(confints), "confint rows and",
    length(regtests), "regtest rows to", out, "\n")
