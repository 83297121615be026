# Regenerate tests/reference/bias_reference.json:
#
#   Rscript tests/reference/make_bias_reference.R [out.json]
#
# Publication-bias references from metafor for tests/meta_analysis/test_bias.py and
# test_bias_plots.py (the Python tests read only the JSON; they do not need R):
#
#   ranktest   metafor::ranktest(yi, vi)  (Begg & Mazumdar; metafor's default exact = TRUE)
#   trimfill   metafor::trimfill(rma(yi, vi, method)), estimator L0 and R0, side automatic,
#              "left" and "right", for FE and REML fits (and DL, automatic side only);
#              the automatic side for every tau^2 estimator; plus the regression of yi on
#              sqrt(vi) that picks the side (rma(yi, vi, mods = sqrt(vi), method))
#   fsn        metafor::fsn(yi, vi, type) for Rosenthal, Orwin and Rosenberg, several
#              alpha / target / weighted settings
#   baujat     the data frame that metafor::baujat(rma(yi, vi, method, test)) returns
#   radial     the data frame that metafor::radial(rma(yi, vi, method)) returns
#   random     60 simulated meta-analyses (k = 20) with ranktest and trimfill results
#              (REML/L0, FE/R0, DL/L0; metafor's error where it stops)
#
# Inputs: the datasets of tests/reference/metafor_reference.json (read with jsonlite, so
# R and Python see identical doubles) plus dat.egger2001 and dat.collins1985b, whose log
# odds ratios are computed with escalc(measure = "OR") as metafor's documentation does and
# rounded to 15 significant digits before fitting; all inputs are stored in the output.
# Errors metafor raises are stored as an "error" entry, warnings under "warnings".

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/reference/bias_reference.json"
base <- fromJSON("tests/reference/metafor_reference.json", simplifyVector = TRUE)

r15 <- function(x) as.numeric(sprintf("%.15g", x))

datasets <- list()
for (name in names(base$datasets)) {
  d <- base$datasets[[name]]
  datasets[[name]] <- list(yi = as.numeric(d$yi), vi = as.numeric(d$vi),
                           labels = as.character(d$labels), measure = d$measure,
                           source = "metafor_reference.json")
}
add <- function(name, dat, labels, measure) {
  keep <- !is.na(dat$yi) & !is.na(dat$vi)
  datasets[[name]] <<- list(yi = r15(as.numeric(dat$yi[keep])),
                            vi = r15(as.numeric(dat$vi[keep])),
                            labels = as.character(labels[keep]), measure = measure,
                            source = "metadat")
}
egger <- escalc(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = dat.egger2001)
add("egger2001", egger, paste0(egger$study, ", ", egger$year), "OR")
collins <- escalc(measure = "OR", ai = pre.xti, n1i = pre.nti, ci = pre.xci, n2i = pre.nci,
                  data = dat.collins1985b)
add("collins1985b", collins, paste0(collins$author, ", ", collins$year), "OR")

num <- function(x) {
  if (is.null(x) || length(x) == 0 || is.na(x[1])) return(NA_real_)
  if (is.infinite(x[1])) return(if (x[1] > 0) "Inf" else "-Inf")
  as.numeric(x[1])
}
vec <- function(x) {
  x <- as.numeric(x)
  lapply(x, function(v) if (is.na(v)) NA_real_ else if (is.infinite(v)) {
    if (v > 0) "Inf" else "-Inf"
  } else v)
}

# Run expr, collecting warnings; an error becomes list(error = message).
capture <- function(expr) {
  warns <- character(0)
  res <- tryCatch(
    withCallingHandlers(expr, warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }),
    error = function(e) e
  )
  list(value = res, warnings = as.list(warns))
}

ranktests <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  r <- capture(ranktest(d$yi, d$vi))
  row <- list(dataset = name, warnings = r$warnings)
  if (inherits(r$value, "error")) {
    row$error <- conditionMessage(r$value)
  } else {
    row$tau <- num(r$value$tau)
    row$pval <- num(r$value$pval)
  }
  ranktests[[length(ranktests) + 1]] <- row
}

trimfills <- list()
tf_one <- function(name, method, estimator, side) {
  d <- datasets[[name]]
  row <- list(dataset = name, method = method, estimator = estimator,
              side_arg = if (is.null(side)) "auto" else side)
  fit <- capture(rma(yi = d$yi, vi = d$vi, method = method))
  if (inherits(fit$value, "error")) {
    row$error <- paste("rma:", conditionMessage(fit$value))
    return(row)
  }
  r <- if (is.null(side)) {
    capture(trimfill(fit$value, estimator = estimator))
  } else {
    capture(trimfill(fit$value, estimator = estimator, side = side))
  }
  row$warnings <- r$warnings
  if (inherits(r$value, "error")) {
    row$error <- conditionMessage(r$value)
    return(row)
  }
  tf <- r$value
  c(row, list(
    side = tf$side, k0 = tf$k0, se_k0 = num(tf$se.k0), p_k0 = num(tf$p.k0), k = tf$k,
    estimate = num(tf$beta), se = num(tf$se), zval = num(tf$zval), pval = num(tf$pval),
    ci_lb = num(tf$ci.lb), ci_ub = num(tf$ci.ub), tau2 = num(tf$tau2), QE = num(tf$QE),
    QEp = num(tf$QEp), I2 = num(tf$I2), H2 = num(tf$H2),
    fill = as.logical(tf$fill), yi = vec(tf$yi), vi = vec(tf$vi)
  ))
}
for (name in names(datasets)) {
  for (method in c("FE", "REML")) {
    for (estimator in c("L0", "R0")) {
      for (side in list(NULL, "left", "right")) {
        trimfills[[length(trimfills) + 1]] <- tf_one(name, method, estimator, side)
      }
    }
  }
  for (estimator in c("L0", "R0")) {
    trimfills[[length(trimfills) + 1]] <- tf_one(name, "DL", estimator, NULL)
  }
}

# A random sample of 60 meta-analyses (k = 20, tau^2 = 0.05) for the batched trimfill and
# ranktest: every row in one call in Python. REML Fisher scoring fails on some of them
# (metafor stops; Python flags the row), which the test checks too.
set.seed(20240601)
random_sets <- list()
for (i in seq_len(60)) {
  vi <- r15(runif(20, 0.01, 0.2))
  yi <- r15(rnorm(20, 0.3, sqrt(vi + 0.05)))
  row <- list(yi = yi, vi = vi)
  rk <- capture(ranktest(yi, vi))
  row$ranktest <- list(tau = num(rk$value$tau), pval = num(rk$value$pval))
  for (spec in list(c("REML", "L0"), c("FE", "R0"), c("DL", "L0"))) {
    r <- capture(trimfill(rma(yi, vi, method = spec[1]), estimator = spec[2]))
    key <- paste0(spec[1], "_", spec[2])
    row[[key]] <- if (inherits(r$value, "error")) {
      list(error = conditionMessage(r$value))
    } else {
      list(k0 = r$value$k0, side = r$value$side, estimate = num(r$value$beta),
           se = num(r$value$se), tau2 = num(r$value$tau2))
    }
  }
  random_sets[[i]] <- row
}

# The regression that picks the side, for every estimator, and the side it picks.
side_fits <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  for (method in c("FE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")) {
    r <- capture(rma(yi = d$yi, vi = d$vi, mods = sqrt(d$vi), method = method))
    row <- list(dataset = name, method = method, warnings = r$warnings)
    if (inherits(r$value, "error")) {
      row$error <- conditionMessage(r$value)
    } else {
      row$tau2 <- num(r$value$tau2)
      row$intercept <- num(r$value$beta[1])
      row$slope <- num(r$value$beta[2])
      row$side <- if (r$value$beta[2] < 0) "right" else "left"
    }
    side_fits[[length(side_fits) + 1]] <- row
  }
}

fsns <- list()
fsn_one <- function(name, type, alpha = 0.05, target = NULL, weighted = FALSE) {
  d <- datasets[[name]]
  r <- if (is.null(target)) {
    capture(fsn(yi = d$yi, vi = d$vi, type = type, alpha = alpha, weighted = weighted))
  } else {
    capture(fsn(yi = d$yi, vi = d$vi, type = type, alpha = alpha, target = target,
                weighted = weighted))
  }
  row <- list(dataset = name, type = type, alpha = alpha,
              target_arg = if (is.null(target)) NA_real_ else target,
              weighted = weighted, warnings = r$warnings)
  if (inherits(r$value, "error")) {
    row$error <- conditionMessage(r$value)
    return(row)
  }
  c(row, list(fsnum = num(r$value$fsnum), pval = num(r$value$pval),
              meanes = num(r$value$meanes), target = num(r$value$target)))
}
for (name in names(datasets)) {
  for (alpha in c(0.05, 0.01)) {
    fsns[[length(fsns) + 1]] <- fsn_one(name, "Rosenthal", alpha)
    fsns[[length(fsns) + 1]] <- fsn_one(name, "Rosenberg", alpha)
  }
  fsns[[length(fsns) + 1]] <- fsn_one(name, "Orwin")
  fsns[[length(fsns) + 1]] <- fsn_one(name, "Orwin", weighted = TRUE)
  fsns[[length(fsns) + 1]] <- fsn_one(name, "Orwin", target = 0.1)
  fsns[[length(fsns) + 1]] <- fsn_one(name, "Orwin", target = -0.05, weighted = TRUE)
}

pdf(NULL)
baujats <- list()
radials <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  for (method in c("FE", "DL", "REML", "PM")) {
    for (test in c("z", "knha")) {
      row <- list(dataset = name, method = method, test = test)
      fit <- capture(rma(yi = d$yi, vi = d$vi, method = method, test = test))
      if (inherits(fit$value, "error")) {
        row$error <- paste("rma:", conditionMessage(fit$value))
      } else {
        b <- capture(baujat(fit$value))
        row$warnings <- b$warnings
        if (inherits(b$value, "error")) {
          row$error <- conditionMessage(b$value)
        } else {
          row$x <- vec(b$value$x)
          row$y <- vec(b$value$y)
        }
      }
      baujats[[length(baujats) + 1]] <- row
    }
  }
  for (method in c("FE", "REML")) {
    row <- list(dataset = name, method = method)
    fit <- capture(rma(yi = d$yi, vi = d$vi, method = method))
    if (inherits(fit$value, "error")) {
      row$error <- paste("rma:", conditionMessage(fit$value))
    } else {
      rd <- radial(fit$value)
      row$x <- vec(rd$x)
      row$y <- vec(rd$y)
      row$estimate <- num(fit$value$beta)
      row$tau2 <- num(fit$value$tau2)
    }
    radials[[length(radials) + 1]] <- row
  }
}
invisible(dev.off())

doc <- list(
  generated_by = "tests/reference/make_bias_reference.R",
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  datasets = datasets,
  ranktest = ranktests,
  trimfill = trimfills,
  side_fits = side_fits,
  fsn = fsns,
  baujat = baujats,
  radial = radials,
  random = random_sets
)
writeLines(toJSON(doc, digits = NA, auto_unbox = TRUE, na = "null", null = "null",
                  pretty = TRUE), out)
cat("wrote", out, ":", length(ranktests), "ranktest,", length(trimfills), "trimfill,",
    length(side_fits), "side fits,", length(fsns), "fsn,", length(baujats), "baujat,",
    length(radials), "radial,", length(random_sets), "random\n")
