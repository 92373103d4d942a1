"""The people who look: marketing's dashboards (Superset, dashboards as code in include/superset/)
and the demand-spike alerts pushed to marketing's channel after each warehouse build."""
