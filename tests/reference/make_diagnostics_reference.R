# Regenerate tests/reference/diagnostics_reference.json:
#
#   Rscript tests/reference/make_diagnostics_reference.R [out.json]
#
# Reference values for spatialmeta.meta_analysis.diagnostics and .subgroups,
# computed with metafor on the datasets stored in metafor_reference.json (read
# with jsonlite, so R fits exactly the doubles that Python sees):
#
#   leave1out  metafor::leave1out(rma(yi, vi, method, test))
#   cumul      metafor::cumul(...) in the stored order and in a random order
#   influence  metafor::influence(...) (inf and dfbs) and rstudent(...)
#   rstandard  metafor::rstandard(..., type = "marginal" / "conditional")
#   subgroups  one rma() per subgroup (separate tau^2), then the test for
#              subgroup differences rma(estimate, sei = se, mods = ~ group,
#              method = "EE"); and the common-tau^2 model
#              rma(yi, vi, mods = ~ group) (QM, tau^2) with its per-group
#              estimates from rma(yi, vi, mods = ~ group - 1) (and predict()
#              for the prediction intervals)
#
# with method in EE, DL, HE, HS, SJ, ML, REML, EB, PM (subgroups: EE, DL, HE,
# ML, REML, PM) and test in z, knha. Groupings: dat.bcg by allocation (random /
# alternate / systematic) and by absolute latitude (< 30 / >= 30 degrees),
# dat.hackshaw1998 by design, dat.molloy2014 by design, dat.raudenbush1985 by
# tester. Cumulative fits in a random order for EE, DL and REML. Numbers are
# written with 17 significant digits; NA -> null, +-Inf -> "Inf"/"-Inf". metafor
# gives NA for a leave-one-out or cumulative fit that fails (e.g. Fisher scoring
# does not converge); such entries would be null (none occur in these data).
# influence() stops for the "identical" set with test = "knha" (Var(b) = 0); those
# entries hold metafor's error message instead of values.
#
# The Python tests (tests/meta_analysis/test_diagnostics.py and
# test_subgroups.py) read only the JSON; they do not need R. Versions of R,
# metafor, metadat and jsonlite are recorded inside the JSON.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/reference/diagnostics_reference.json"
src <- "tests/reference/metafor_reference.json"

ref <- fromJSON(src, simplifyVector = TRUE)
names_used <- c("bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014",
                "pritz1997", "identical")
datasets <- ref$datasets[names_used]

# A numeric vector as a JSON array with 17 significant digits.
num17 <- function(x) {
  x <- as.numeric(x)
  txt <- ifelse(is.na(x), "null",
                ifelse(is.infinite(x), ifelse(x > 0, '"Inf"', '"-Inf"'),
                       sprintf("%.17g", x)))
  structure(paste0("[", paste(txt, collapse = ", "), "]"), class = "json")
}
num1 <- function(x) {
  x <- as.numeric(x)[1]
  if (is.na(x)) return(NA)
  if (is.infinite(x)) return(if (x > 0) "Inf" else "-Inf")
  structure(sprintf("%.17g", x), class = "json")
}

methods <- c("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
tests <- c("z", "knha")

fit <- function(d, method, test) {
  suppressWarnings(rma(yi = d$yi, vi = d$vi, method = method, test = test))
}

# metafor's list.rma -> named list of JSON vectors (dots become underscores).
fields <- function(x, keep) {
  lst <- unclass(x)
  res <- list()
  for (nm in keep) {
    src_nm <- nm
    if (nm == "zval" && is.null(lst[["zval"]])) src_nm <- "tval"
    if (nm == "pval" && is.null(lst[["pval"]])) src_nm <- "pvals"
    if (nm == "tau2" && is.null(lst[["tau2"]])) {
      res[[nm]] <- num17(rep(0, length(lst$estimate)))  # metafor drops tau2 for EE
      next
    }
    res[[gsub(".", "_", nm, fixed = TRUE)]] <- num17(lst[[src_nm]])
  }
  res
}
l1o_fields <- c("estimate", "se", "zval", "pval", "ci.lb", "ci.ub", "Q", "Qp", "tau2",
                "I2", "H2")

leave1out_ref <- list()
cumul_ref <- list()
influence_ref <- list()
rstandard_ref <- list()
set.seed(20240606)
perms <- lapply(datasets, function(d) sample.int(length(d$yi)))

for (name in names(datasets)) {
  d <- datasets[[name]]
  k <- length(d$yi)
  for (method in methods) {
    for (test in tests) {
      res <- fit(d, method, test)
      head <- list(dataset = name, method = method, test = test)

      l1o <- suppressWarnings(leave1out(res))
      leave1out_ref[[length(leave1out_ref) + 1]] <- c(head, fields(l1o, l1o_fields))

      cu <- suppressWarnings(cumul(res))
      cumul_ref[[length(cumul_ref) + 1]] <- c(head, list(order = 0:(k - 1)),
                                              fields(cu, l1o_fields))
      if (method %in% c("EE", "DL", "REML")) {
        # metafor 3.8 sorts by the variable given as `order`; ranking by the inverse
        # permutation puts the studies in the order perms[[name]].
        p <- perms[[name]]
        cu <- suppressWarnings(cumul(res, order = order(p)))
        cumul_ref[[length(cumul_ref) + 1]] <- c(head, list(order = p - 1L),
                                                fields(cu, l1o_fields))
      }

      for (type in c("marginal", "conditional")) {
        rsd <- rstandard(res, type = type)
        rstandard_ref[[length(rstandard_ref) + 1]] <- c(head, list(
          type = type, resid = num17(rsd$resid), se = num17(rsd$se), z = num17(rsd$z)
        ))
      }

      inf <- tryCatch(suppressWarnings(influence(res)), error = function(e) e)
      if (inherits(inf, "error")) {
        # e.g. test = "knha" on identical effects: vb = 0 cannot be inverted.
        influence_ref[[length(influence_ref) + 1]] <- c(head,
                                                        list(error = conditionMessage(inf)))
        next
      }
      rs <- suppressWarnings(rstudent(res))
      i <- inf$inf
      influence_ref[[length(influence_ref) + 1]] <- c(head, list(
        rstudent = num17(i$rstudent), dffits = num17(i$dffits), cook_d = num17(i$cook.d),
        cov_r = num17(i$cov.r), tau2_del = num17(i$tau2.del), QE_del = num17(i$QE.del),
        hat = num17(i$hat), weight = num17(i$weight), dfbs = num17(inf$dfbs$intrcpt),
        inf = as.logical(inf$is.infl & !is.na(inf$is.infl)),
        resid = num17(rs$resid), resid_se = num17(rs$se)
      ))
    }
  }
}

# --- subgroups ----------------------------------------------------------------

bcg <- dat.bcg
stopifnot(length(bcg$alloc) == length(datasets$bcg$yi))
groupings <- list(
  list(dataset = "bcg", grouping = "alloc", groups = bcg$alloc),
  list(dataset = "bcg", grouping = "ablat",
       groups = ifelse(bcg$ablat >= 30, "far (>= 30)", "near (< 30)")),
  list(dataset = "hackshaw1998", grouping = "design", groups = dat.hackshaw1998$design),
  list(dataset = "molloy2014", grouping = "design", groups = dat.molloy2014$design),
  list(dataset = "raudenbush1985", grouping = "tester", groups = dat.raudenbush1985$tester)
)
sub_methods <- c("EE", "DL", "HE", "ML", "REML", "PM")
per_group_fields <- c("k", "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2",
                      "se_tau2", "I2", "H2", "QE", "QEp", "pi_lb", "pi_ub")
subgroups_ref <- list()
for (g in groupings) {
  d <- datasets[[g$dataset]]
  stopifnot(length(g$groups) == length(d$yi))
  grp <- factor(g$groups)
  for (method in sub_methods) {
    for (test in tests) {
      per <- list()
      est <- c()
      se <- c()
      for (lev in levels(grp)) {
        s <- grp == lev
        r <- suppressWarnings(rma(yi = d$yi[s], vi = d$vi[s], method = method, test = test))
        pr <- predict(r)
        vals <- list(k = r$k, estimate = r$beta, se = r$se, zval = r$zval, pval = r$pval,
                     ci_lb = r$ci.lb, ci_ub = r$ci.ub, tau2 = r$tau2, se_tau2 = r$se.tau2,
                     I2 = r$I2, H2 = r$H2, QE = r$QE, QEp = r$QEp, pi_lb = pr$pi.lb,
                     pi_ub = pr$pi.ub)
        per[[lev]] <- lapply(vals, num1)
        est <- c(est, r$beta)
        se <- c(se, r$se)
      }
      lev <- levels(grp)
      qb <- rma(est, sei = se, mods = ~ factor(lev), method = "EE")
      common <- suppressWarnings(rma(yi = d$yi, vi = d$vi, mods = ~ grp, method = method,
                                     test = test))
      cells <- suppressWarnings(rma(yi = d$yi, vi = d$vi, mods = ~ grp - 1, method = method,
                                    test = test))
      pcells <- predict(cells, newmods = diag(nlevels(grp)))
      subgroups_ref[[length(subgroups_ref) + 1]] <- list(
        dataset = g$dataset, grouping = g$grouping, groups = as.character(g$groups),
        method = method, test = test, levels = lev, per_group = per,
        Qb = num1(qb$QM), Qb_df = qb$QMdf[1], Qb_pval = num1(qb$QMp),
        common = list(QM = num1(common$QM), QMdf = common$QMdf, QMp = num1(common$QMp),
                      tau2 = num1(common$tau2), QE = num1(common$QE),
                      QEp = num1(common$QEp), I2 = num1(common$I2), H2 = num1(common$H2),
                      estimate = num17(coef(cells)), se = num17(cells$se),
                      zval = num17(cells$zval), pval = num17(cells$pval),
                      ci_lb = num17(cells$ci.lb), ci_ub = num17(cells$ci.ub),
                      pi_lb = num17(pcells$pi.lb), pi_ub = num17(pcells$pi.ub))
      )
    }
  }
}

doc <- list(
  generated_by = "tests/reference/make_diagnostics_reference.R",
  source_datasets = src,
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  datasets = lapply(datasets, function(d) list(yi = num17(d$yi), vi = num17(d$vi),
                                               labels = d$labels)),
  leave1out = leave1out_ref,
  cumul = cumul_ref,
  influence = influence_ref,
  rstandard = rstandard_ref,
  subgroups = subgroups_ref
)
writeLines(toJSON(doc, auto_unbox = TRUE, json_verbatim = TRUE, na = "null", null = "null",
                  digits = NA, pretty = FALSE), out)
cat("wrote", length(leave1out_ref), "leave1out,", length(cumul_ref), "cumul,",
    length(influence_ref), "influence,", length(rstandard_ref), "rstandard,",
    length(subgroups_ref), "subgroups entries to", out, "\n")
