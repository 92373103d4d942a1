"""The source schema: classicmodels v3.1 exactly, plus ratings and documented additions.

Two variants:

``original``
    classicmodels v3.1 as published by mysqltutorial.org (table and column names, types,
    keys, foreign keys, latin1), plus ``ratings``. This is what a dump loads as.

``modern``
    the same tables and columns in the same order, with columns a modern replica has
    appended at the end of a table (as ``ALTER TABLE ... ADD COLUMN`` would):

    * ``orders.orderTimestamp DATETIME NULL``: when the order was placed (UTC). v3.1 keeps
      only ``orderDate`` (a DATE), which limits demand analytics to a daily grain.
    * ``updated_at TIMESTAMP(6)`` with ``ON UPDATE CURRENT_TIMESTAMP(6)`` and an index, on
      the tables that change at scale (customers, products, orders, orderdetails, payments,
      ratings): the cursor for incremental extraction.

The platform runs on both; on ``original`` it degrades to full snapshots and daily grain.
"""

from __future__ import annotations

VARIANTS = ("original", "modern")

# Creation order respects foreign keys.
TABLE_ORDER = [
    "productlines",
    "products",
    "offices",
    "employees",
    "customers",
    "orders",
    "orderdetails",
    "payments",
    "ratings",
]

CLASSICMODELS_V31_DDL: dict[str, str] = {
    "productlines": """
CREATE TABLE `productlines` (
  `productLine` varchar(50) NOT NULL,
  `textDescription` varchar(4000) DEFAULT NULL,
  `htmlDescription` mediumtext,
  `image` mediumblob,
  PRIMARY KEY (`productLine`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "products": """
CREATE TABLE `products` (
  `productCode` varchar(15) NOT NULL,
  `productName` varchar(70) NOT NULL,
  `productLine` varchar(50) NOT NULL,
  `productScale` varchar(10) NOT NULL,
  `productVendor` varchar(50) NOT NULL,
  `productDescription` text NOT NULL,
  `quantityInStock` smallint(6) NOT NULL,
  `buyPrice` decimal(10,2) NOT NULL,
  `MSRP` decimal(10,2) NOT NULL,{extra}
  PRIMARY KEY (`productCode`),
  KEY `productLine` (`productLine`),{extra_keys}
  CONSTRAINT `products_ibfk_1` FOREIGN KEY (`productLine`) REFERENCES `productlines` (`productLine`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "offices": """
CREATE TABLE `offices` (
  `officeCode` varchar(10) NOT NULL,
  `city` varchar(50) NOT NULL,
  `phone` varchar(50) NOT NULL,
  `addressLine1` varchar(50) NOT NULL,
  `addressLine2` varchar(50) DEFAULT NULL,
  `state` varchar(50) DEFAULT NULL,
  `country` varchar(50) NOT NULL,
  `postalCode` varchar(15) NOT NULL,
  `territory` varchar(10) NOT NULL,
  PRIMARY KEY (`officeCode`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "employees": """
CREATE TABLE `employees` (
  `employeeNumber` int(11) NOT NULL,
  `lastName` varchar(50) NOT NULL,
  `firstName` varchar(50) NOT NULL,
  `extension` varchar(10) NOT NULL,
  `email` varchar(100) NOT NULL,
  `officeCode` varchar(10) NOT NULL,
  `reportsTo` int(11) DEFAULT NULL,
  `jobTitle` varchar(50) NOT NULL,
  PRIMARY KEY (`employeeNumber`),
  KEY `reportsTo` (`reportsTo`),
  KEY `officeCode` (`officeCode`),
  CONSTRAINT `employees_ibfk_1` FOREIGN KEY (`reportsTo`) REFERENCES `employees` (`employeeNumber`),
  CONSTRAINT `employees_ibfk_2` FOREIGN KEY (`officeCode`) REFERENCES `offices` (`officeCode`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "customers": """
CREATE TABLE `customers` (
  `customerNumber` int(11) NOT NULL,
  `customerName` varchar(50) NOT NULL,
  `contactLastName` varchar(50) NOT NULL,
  `contactFirstName` varchar(50) NOT NULL,
  `phone` varchar(50) NOT NULL,
  `addressLine1` varchar(50) NOT NULL,
  `addressLine2` varchar(50) DEFAULT NULL,
  `city` varchar(50) NOT NULL,
  `state` varchar(50) DEFAULT NULL,
  `postalCode` varchar(15) DEFAULT NULL,
  `country` varchar(50) NOT NULL,
  `salesRepEmployeeNumber` int(11) DEFAULT NULL,
  `creditLimit` decimal(10,2) DEFAULT NULL,{extra}
  PRIMARY KEY (`customerNumber`),
  KEY `salesRepEmployeeNumber` (`salesRepEmployeeNumber`),{extra_keys}
  CONSTRAINT `customers_ibfk_1` FOREIGN KEY (`salesRepEmployeeNumber`) REFERENCES `employees` (`employeeNumber`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "orders": """
CREATE TABLE `orders` (
  `orderNumber` int(11) NOT NULL,
  `orderDate` date NOT NULL,
  `requiredDate` date NOT NULL,
  `shippedDate` date DEFAULT NULL,
  `status` varchar(15) NOT NULL,
  `comments` text,
  `customerNumber` int(11) NOT NULL,{extra}
  PRIMARY KEY (`orderNumber`),
  KEY `customerNumber` (`customerNumber`),{extra_keys}
  CONSTRAINT `orders_ibfk_1` FOREIGN KEY (`customerNumber`) REFERENCES `customers` (`customerNumber`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "orderdetails": """
CREATE TABLE `orderdetails` (
  `orderNumber` int(11) NOT NULL,
  `productCode` varchar(15) NOT NULL,
  `quantityOrdered` int(11) NOT NULL,
  `priceEach` decimal(10,2) NOT NULL,
  `orderLineNumber` smallint(6) NOT NULL,{extra}
  PRIMARY KEY (`orderNumber`,`productCode`),
  KEY `productCode` (`productCode`),{extra_keys}
  CONSTRAINT `orderdetails_ibfk_1` FOREIGN KEY (`orderNumber`) REFERENCES `orders` (`orderNumber`),
  CONSTRAINT `orderdetails_ibfk_2` FOREIGN KEY (`productCode`) REFERENCES `products` (`productCode`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    "payments": """
CREATE TABLE `payments` (
  `customerNumber` int(11) NOT NULL,
  `checkNumber` varchar(50) NOT NULL,
  `paymentDate` date NOT NULL,
  `amount` decimal(10,2) NOT NULL,{extra}
  PRIMARY KEY (`customerNumber`,`checkNumber`),{extra_keys}
  CONSTRAINT `payments_ibfk_1` FOREIGN KEY (`customerNumber`) REFERENCES `customers` (`customerNumber`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
    # Not part of v3.1: the recommender's ratings, one per purchased (customer, product).
    "ratings": """
CREATE TABLE `ratings` (
  `customerNumber` int(11) NOT NULL,
  `productCode` varchar(15) NOT NULL,
  `productRating` tinyint(4) NOT NULL,{extra}
  PRIMARY KEY (`customerNumber`,`productCode`),
  KEY `productCode` (`productCode`),{extra_keys}
  CONSTRAINT `ratings_ibfk_1` FOREIGN KEY (`customerNumber`) REFERENCES `customers` (`customerNumber`),
  CONSTRAINT `ratings_ibfk_2` FOREIGN KEY (`productCode`) REFERENCES `products` (`productCode`),
  CONSTRAINT `ratings_productRating_1_to_5` CHECK (`productRating` between 1 and 5)
) ENGINE=InnoDB DEFAULT CHARSET=latin1""",
}

UPDATED_AT_COLUMN = (
    "\n  `updated_at` timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6),"
)
UPDATED_AT_KEY = "\n  KEY `updated_at` (`updated_at`),"

# Columns appended by the modern variant, per table, in order.
MODERN_ADDITIONS: dict[str, list[str]] = {
    "products": ["updated_at"],
    "customers": ["updated_at"],
    "orders": ["orderTimestamp", "updated_at"],
    "orderdetails": ["updated_at"],
    "payments": ["updated_at"],
    "ratings": ["updated_at"],
}


def create_table_sql(table: str, variant: str = "modern") -> str:
    if variant not in VARIANTS:
        raise ValueError(f"schema variant must be one of {VARIANTS}, got {variant!r}")
    template = CLASSICMODELS_V31_DDL[table]
    extra, extra_keys = "", ""
    if variant == "modern":
        added = MODERN_ADDITIONS.get(table, [])
        if "orderTimestamp" in added:
            extra += "\n  `orderTimestamp` datetime DEFAULT NULL,"
        if "updated_at" in added:
            extra += UPDATED_AT_COLUMN
            extra_keys += UPDATED_AT_KEY
    return template.format(extra=extra, extra_keys=extra_keys).strip()


def create_schema_sql(variant: str = "modern") -> list[str]:
    return [create_table_sql(table, variant) for table in TABLE_ORDER]


def table_columns(table: str, variant: str = "modern") -> list[str]:
    """Column names of a table in order, parsed from its DDL."""
    names = []
    for line in create_table_sql(table, variant).splitlines():
        line = line.strip()
        if line.startswith("`"):
            names.append(line.split("`")[1])
    return names
