public enum Ferry {}
