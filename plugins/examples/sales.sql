-- Sample sales for plugins/data_analyzer.rhai. Runs on SQLite and on PostgreSQL; run it
-- again to start over:
--   mofa sql plugins/examples/sales.sql                        # the embedded SQLite database
--   MOFA_DATABASE_URL=postgres://postgres@127.0.0.1/test mofa sql plugins/examples/sales.sql
-- analyze_sales() then returns #{total_sales: 5175.62} (the rows after 2024-01-01).
DROP TABLE IF EXISTS sales;
CREATE TABLE sales (
    id      INTEGER PRIMARY KEY,
    date    DATE NOT NULL,
    region  TEXT NOT NULL,
    product TEXT NOT NULL,
    amount  NUMERIC(10, 2) NOT NULL
);
INSERT INTO sales (id, date, region, product, amount) VALUES
    (1, '2023-11-03', 'south', 'gadget', 444.45),
    (2, '2023-11-17', 'east', 'gizmo', 217.70),
    (3, '2023-12-01', 'west', 'widget', 537.50),
    (4, '2023-12-15', 'north', 'gadget', 873.19),
    (5, '2023-12-29', 'south', 'gizmo', 83.28),
    (6, '2024-01-01', 'east', 'widget', 114.94),
    (7, '2024-01-05', 'west', 'gadget', 722.39),
    (8, '2024-01-19', 'north', 'gizmo', 143.37),
    (9, '2024-02-02', 'south', 'widget', 499.31),
    (10, '2024-02-16', 'east', 'gadget', 783.87),
    (11, '2024-03-01', 'west', 'gizmo', 96.02),
    (12, '2024-03-15', 'north', 'widget', 685.10),
    (13, '2024-03-29', 'south', 'gadget', 301.40),
    (14, '2024-04-12', 'east', 'gizmo', 69.14),
    (15, '2024-04-26', 'west', 'widget', 132.65),
    (16, '2024-05-10', 'north', 'gadget', 588.38),
    (17, '2024-05-24', 'south', 'gizmo', 568.10),
    (18, '2024-06-07', 'east', 'widget', 111.56),
    (19, '2024-06-21', 'west', 'gadget', 335.44),
    (20, '2024-07-05', 'north', 'gizmo', 138.89);
