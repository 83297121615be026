# Reference values for the sampling covariance of dependent effects
# (spatialmeta.meta_analysis.vcov): clubSandwich 0.5.8's impute_covariance_matrix and
# metafor 3.8's vcalc on metadat data, and one rma.mv fit with a vcalc V. The inputs are
# rounded to 15 significant digits before anything is computed and stored beside the
# matrices, so R and Python start from the same doubles. Each V is stored as its nonzero
# entries (0-based i, j, x; every other entry is 0).
#
#   impute:  dat.assink2016  r = 0.6 by study; the same with the rows shuffled; r by
#                            cluster; smooth_vi; subgroup = deltype; ar1 = 0.5 on esid with
#                            and without r = 0.3; return_list blocks (cluster order)
#            dat.ishak2007   ar1 = 0.97 on the time points (long format), r missing
#   vcalc:   dat.assink2016  obs = esid, rho = 0.6; type = deltype + obs = esid,
#                            rho = c(0.7, 0.5); subgroup = deltype
#            dat.berkey1998  rvars = c(v1i, v2i), vi = 1 (the dataset's own V, also stored
#                            as bldiag of its 2 x 2 blocks); obs = outcome, rho = 0.4;
#                            type = outcome, rho = 0.4
#            dat.kalaian1996 type = outcome, rho = 0.66
#            dat.ishak2007   time1 = time, phi = 0.97
#            dat.knapp2017   grp1/grp2/w1/w2 (shared control groups) with obs = task.diff
#                            and the 8 x 8 correlation matrix of ?vcalc; grp1 + w1 alone;
#                            grp1/grp2/w1/w2 without obs (clusters that are not positive
#                            definite: metafor's warnings stored)
#            hand-made       a within-subjects design (grp1 = grp2, time1 != time2) mixed
#                            with a between-subjects contrast, phi = 0.8
#   rma.mv:  dat.assink2016  rma.mv(yi, vcalc(vi, study, obs = esid, rho = 0.6),
#                            random = ~ 1 | study/esid), REML
#
# Run from the repository root:  Rscript tests/reference/make_vcov_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(clubSandwich)
  library(jsonlite)
})
s15 <- function(x) signif(as.numeric(x), 15)
mat <- function(M) unname(lapply(seq_len(nrow(M)), function(i) as.numeric(M[i, ])))
# a k x k matrix as its nonzero entries (0-based row i, column j, value x); the rest is 0
nonzero <- function(M) {
  w <- which(M != 0, arr.ind = TRUE)
  w <- w[order(w[, 1], w[, 2]), , drop = FALSE]
  list(k = nrow(M), i = as.integer(w[, 1] - 1), j = as.integer(w[, 2] - 1), x = as.numeric(M[w]))
}
# run a call, keeping its warnings (messages only) beside the value
catching <- function(expr) {
  w <- character(0)
  value <- withCallingHandlers(expr, warning = function(e) {
    w <<- c(w, conditionMessage(e))
    invokeRestart("muffleWarning")
  })
  list(value = value, warnings = w)
}

data(dat.assink2016, package = "metadat")
a <- dat.assink2016
a$vi <- s15(a$vi)
a$yi <- s15(a$yi)
set.seed(11)
shuffle <- sample(nrow(a))
as <- a[shuffle, ]
n_study <- length(unique(a$study))
r_by <- s15(seq(0.1, 0.8, length.out = n_study))  # one r per study, in sorted study order

impute <- function(name, data, args, inputs) {
  out <- catching(do.call(impute_covariance_matrix,
                          c(list(vi = data$vi, cluster = data$study), args,
                            list(return_list = FALSE))))
  list(name = name, inputs = inputs, V = nonzero(out$value), warnings = out$warnings)
}
a_in <- list(vi = a$vi, cluster = a$study, esid = a$esid, deltype = as.character(a$deltype))
as_in <- list(vi = as$vi, cluster = as$study, esid = as$esid)
impute_cases <- list(
  impute("assink_r06", a, list(r = 0.6), c(a_in, list(r = 0.6))),
  impute("assink_r06_shuffled", as, list(r = 0.6), c(as_in, list(r = 0.6))),
  impute("assink_r_by_cluster", a, list(r = r_by), c(a_in, list(r = r_by))),
  impute("assink_smooth", a, list(r = 0.6, smooth_vi = TRUE),
         c(a_in, list(r = 0.6, smooth_vi = TRUE))),
  impute("assink_subgroup", a, list(r = 0.6, subgroup = a$deltype),
         c(a_in, list(r = 0.6, subgroup = "deltype"))),
  impute("assink_ar1", a, list(ti = a$esid, ar1 = 0.5), c(a_in, list(ti = "esid", ar1 = 0.5))),
  impute("assink_r_ar1", a, list(r = 0.3, ti = a$esid, ar1 = 0.5),
         c(a_in, list(r = 0.3, ti = "esid", ar1 = 0.5)))
)
blocks <- impute_covariance_matrix(as$vi, as$study, r = 0.6, return_list = TRUE)
impute_list <- list(inputs = as_in, r = 0.6, clusters = names(blocks),
                    blocks = unname(lapply(blocks, mat)))

# dat.ishak2007 in long format (the ?vcalc example): one row per study and time point
data(dat.ishak2007, package = "metadat")
ish <- reshape(dat.ishak2007, direction = "long", idvar = "study", v.names = c("yi", "vi"),
               varying = list(c(2, 4, 6, 8), c(3, 5, 7, 9)))
ish <- ish[order(ish$study, ish$time), ]
ish <- ish[!is.na(ish$yi), ]
ish$vi <- s15(ish$vi)
ish_in <- list(vi = ish$vi, cluster = as.character(ish$study), time = as.numeric(ish$time))
impute_cases[[length(impute_cases) + 1]] <- {
  out <- impute_covariance_matrix(ish$vi, ish$study, ti = ish$time, ar1 = 0.97,
                                  return_list = FALSE)
  list(name = "ishak_ar1", inputs = c(ish_in, list(ti = "time", ar1 = 0.97)), V = nonzero(out),
       warnings = character(0))
}

vc <- function(name, inputs, expr) {
  out <- catching(expr)
  list(name = name, inputs = inputs, V = nonzero(out$value), warnings = out$warnings)
}
data(dat.berkey1998, package = "metadat")
b <- dat.berkey1998
b$vi <- s15(b$vi)
b$v1i <- s15(b$v1i)
b$v2i <- s15(b$v2i)
b_in <- list(vi = b$vi, cluster = b$trial, author = as.character(b$author),
             outcome = as.character(b$outcome), v1i = b$v1i, v2i = b$v2i)
b_own <- bldiag(lapply(split(b[c("v1i", "v2i")], b$trial), as.matrix))
data(dat.kalaian1996, package = "metadat")
kal <- dat.kalaian1996
kal$vi <- s15(kal$vi)
data(dat.knapp2017, package = "metadat")
kn <- dat.knapp2017
kn$vi <- s15(kn$vi)
kn$task.diff <- unlist(lapply(split(kn, kn$study), function(x) {
  task.int <- as.integer(factor(x$task))
  diff.int <- as.integer(factor(x$difficulty))
  diff.int[is.na(diff.int)] <- 1
  paste0(task.int, ".", diff.int)
}))
R <- matrix(0.4, nrow = 8, ncol = 8)
R[5:8, 1:4] <- R[1:4, 5:8] <- 0.28
diag(R[1:4, 5:8]) <- 0.7
diag(R[5:8, 1:4]) <- 0.7
diag(R) <- 1
rownames(R) <- colnames(R) <- paste0(rep(1:2, each = 4), ".", 1:4)
kn_in <- list(vi = kn$vi, cluster = kn$study, group1 = kn$group1, group2 = kn$group2,
              n_sz = as.numeric(kn$n_sz), n_hc = as.numeric(kn$n_hc), task_diff = kn$task.diff,
              rho_labels = rownames(R), rho = mat(R))
# a hand-made study design: study 1 compares two post-test times with the pre-test in one
# group (within subjects) and the treated with the control group at time 2; study 2 has
# two treatments against one control at time 1
wd <- data.frame(cluster = c(1, 1, 1, 2, 2), grp1 = c("T", "T", "T", "A", "B"),
                 grp2 = c("T", "T", "C", "C", "C"), time1 = c(2, 3, 2, 1, 1),
                 time2 = c(1, 1, 2, 1, 1), w1 = c(30, 30, 30, 25, 20), w2 = c(30, 30, 28, 40, 40),
                 vi = s15(c(0.041, 0.046, 0.07, 0.066, 0.074)))
vcalc_cases <- list(
  vc("assink_obs", c(a_in, list(obs = "esid", rho = 0.6)),
     vcalc(vi, cluster = study, obs = esid, rho = 0.6, data = a)),
  vc("assink_type_obs", c(a_in, list(obs = "esid", type = "deltype", rho = c(0.7, 0.5))),
     vcalc(vi, cluster = study, type = deltype, obs = esid, rho = c(0.7, 0.5), data = a)),
  vc("assink_subgroup", c(a_in, list(obs = "esid", subgroup = "deltype", rho = 0.6)),
     vcalc(vi, cluster = study, subgroup = deltype, obs = esid, rho = 0.6, data = a)),
  vc("berkey_rvars", c(b_in, list(vi_one = TRUE, cluster_by = "author", rvars = c("v1i", "v2i"))),
     vcalc(vi = 1, cluster = author, rvars = c(v1i, v2i), data = b)),
  vc("berkey_obs", c(b_in, list(obs = "outcome", rho = 0.4)),
     vcalc(vi, cluster = trial, obs = outcome, rho = 0.4, data = b)),
  vc("berkey_type", c(b_in, list(type = "outcome", rho = 0.4)),
     vcalc(vi, cluster = trial, type = outcome, rho = 0.4, data = b)),
  vc("kalaian_type", list(vi = kal$vi, cluster = kal$study, type = as.character(kal$outcome),
                          rho = 0.66),
     vcalc(vi, cluster = study, type = outcome, rho = 0.66, data = kal)),
  vc("ishak_time", c(ish_in, list(time1 = "time", phi = 0.97)),
     vcalc(vi, cluster = study, time1 = time, phi = 0.97, data = ish)),
  vc("knapp_groups_obs", c(kn_in, list(grp = TRUE, obs = TRUE)),
     vcalc(vi, cluster = study, grp1 = group1, grp2 = group2, w1 = n_sz, w2 = n_hc,
           obs = task.diff, rho = R, data = kn)),
  vc("knapp_grp1_only", c(kn_in, list(grp1_only = TRUE, obs = TRUE)),
     vcalc(vi, cluster = study, grp1 = group1, w1 = n_sz, obs = task.diff, rho = R, data = kn)),
  vc("knapp_groups_no_obs", c(kn_in, list(grp = TRUE, obs = FALSE)),
     vcalc(vi, cluster = study, grp1 = group1, grp2 = group2, w1 = n_sz, w2 = n_hc, data = kn)),
  vc("within_subjects", c(as.list(wd), list(phi = 0.8)),
     vcalc(vi, cluster = cluster, grp1 = grp1, grp2 = grp2, time1 = time1, time2 = time2,
           w1 = w1, w2 = w2, phi = 0.8, data = wd))
)

V <- vcalc(vi, cluster = study, obs = esid, rho = 0.6, data = a)
fit <- rma.mv(yi, V, random = ~ 1 | study/esid, data = a)
rma_mv <- list(yi = a$yi, vi = a$vi, study = a$study, esid = a$esid, rho = 0.6,
               sigma2 = as.numeric(fit$sigma2), beta = as.numeric(fit$beta),
               se = as.numeric(fit$se), zval = as.numeric(fit$zval),
               ci_lb = as.numeric(fit$ci.lb), ci_ub = as.numeric(fit$ci.ub),
               QE = as.numeric(fit$QE), logLik = as.numeric(logLik(fit)))

writeLines(toJSON(list(R = R.version.string,
                       metafor = as.character(packageVersion("metafor")),
                       clubSandwich = as.character(packageVersion("clubSandwich")),
                       metadat = as.character(packageVersion("metadat")),
                       impute = impute_cases, impute_list = impute_list, vcalc = vcalc_cases,
                       berkey_own_V = nonzero(b_own), rma_mv = rma_mv),
                  digits = NA, auto_unbox = TRUE, null = "null"),
           "tests/reference/vcov_reference.json")
