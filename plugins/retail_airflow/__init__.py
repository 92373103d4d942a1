"""Airflow-specific pieces of the platform: assets, notifiers, DAG defaults, operators.

The plugins folder is on Airflow's import path, so DAG files import ``retail_airflow``;
the logic these classes call lives in the ``retail_platform`` package under include/.
"""
